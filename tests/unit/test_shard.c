/* test_shard.c - the op registry's sharding rules one by one (reshape, matmul, broadcasting,
 * attention, reductions), and the partitioner on whole graphs: which parameters it splits, which
 * collectives it inserts, the local shapes. Execution against one process is tests/mpi/test_tp.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/runner.h"
#include "src/ir/ir.h"
#include "src/partition/program.h"
#include "whale.h"

#define DIMS(...) (int64_t[]){__VA_ARGS__}
static const wh__layout R = {WH_LAY_R, 0, 1}, P = {WH_LAY_P, 0, 1};
static wh__layout S(int d, int g) { return (wh__layout){WH_LAY_S, (int8_t)d, (int8_t)g}; }

static wh__value vals[8];
static wh__shape shp(int nd, const int64_t *d) {
  wh__shape s = {nd, {0}};
  for (int i = 0; i < nd; i++) s.d[i] = d[i];
  return s;
}

/* Ask op's rule about a node reading values 0..nin-1 into value 7, inputs in layouts in[]. */
static wh__shard_q ask(int op, int nin, const wh__layout *in, wh__layout *want, wh__node *n, int tp) {
  static int32_t ins[4] = {0, 1, 2, 3};
  n->op = op;
  n->n_in = nin;
  n->in = ins;
  n->out = 7;
  for (int k = 0; k < nin; k++) want[k] = R;
  wh__shard_q q = {vals, tp, 0, in, want, R};
  wh__ops[op]->shard(&q, n);
  return q;
}

static int same(wh__layout a, wh__layout b) { return wh__lay_eq(a, b); }

static void rules(const void *arg) {
  (void)arg;
  wh__node n;
  wh__layout want[4];
  /* reshape [B, 8, 16] -> [8B, 16], split on the features: stays on the features */
  memset(&n, 0, sizeof n);
  vals[0].shape = shp(3, DIMS(-1, 8, 16));
  vals[7].shape = shp(2, DIMS(-8, 16));
  n.n_ia = 2, n.ia[0] = -8, n.ia[1] = 16;
  wh__layout in[4] = {S(2, 1)};
  wh__shard_q q = ask(WH_OP_RESHAPE, 1, in, want, &n, 2);
  EXPECT(same(q.out, S(1, 1)) && n.ia[1] == 8 && n.ia[0] == -8, "reshape keeps a feature split (attr %lld)",
         (long long)n.ia[1]);
  /* [16] -> [4, 4]: a split of the whole becomes a split of the leading dimension */
  memset(&n, 0, sizeof n);
  vals[0].shape = shp(1, DIMS(16));
  vals[7].shape = shp(2, DIMS(4, 4));
  n.n_ia = 2, n.ia[0] = 4, n.ia[1] = 4;
  in[0] = S(0, 1);
  q = ask(WH_OP_RESHAPE, 1, in, want, &n, 2);
  EXPECT(same(q.out, S(0, 1)) && n.ia[0] == 2, "reshape [16] -> [4,4] maps the split to dim 0");
  /* [B, 8, 16] -> [B, 128]: the split dimension is not the leading one of its group: whole */
  memset(&n, 0, sizeof n);
  vals[0].shape = shp(3, DIMS(-1, 8, 16));
  vals[7].shape = shp(2, DIMS(-1, 128));
  n.n_ia = 2, n.ia[0] = -1, n.ia[1] = 128;
  in[0] = S(2, 1);
  q = ask(WH_OP_RESHAPE, 1, in, want, &n, 2);
  EXPECT(same(q.out, R) && same(want[0], R) && n.ia[1] == 128, "reshape merging a split inner dim asks for it whole");
  /* partial sums are summed before a view (the source's one sum then serves every reader) */
  in[0] = P;
  q = ask(WH_OP_RESHAPE, 1, in, want, &n, 2);
  EXPECT(same(q.out, R) && same(want[0], R), "partial sums are summed before a reshape");

  /* matmul x [B, 16] @ W^T, W [32, 16] split by rows (output features): column parallel */
  memset(&n, 0, sizeof n);
  vals[0].shape = shp(2, DIMS(-1, 16));
  vals[1].shape = shp(2, DIMS(32, 16));
  vals[7].shape = shp(2, DIMS(-1, 32));
  n.n_ia = 2, n.ia[0] = 0, n.ia[1] = 1;
  in[0] = R, in[1] = S(0, 1);
  q = ask(WH_OP_MATMUL, 2, in, want, &n, 2);
  EXPECT(same(q.out, S(1, 1)) && same(want[1], S(0, 1)) && same(want[0], R), "column-parallel matmul");
  /* the contraction split on both sides: partial sums; a whole weight is sliced to match */
  in[0] = S(1, 1), in[1] = R;
  q = ask(WH_OP_MATMUL, 2, in, want, &n, 2);
  EXPECT(same(q.out, P) && same(want[1], S(1, 1)) && same(want[0], S(1, 1)), "row-parallel matmul: partial sums");
  /* a partial left operand is summed first */
  in[0] = P, in[1] = R;
  q = ask(WH_OP_MATMUL, 2, in, want, &n, 2);
  EXPECT(same(q.out, R) && same(want[0], R), "partial input to a matmul is summed first");

  /* broadcasting add: [B, 8, 16] split on 16 plus [16]: the vector is split alike */
  memset(&n, 0, sizeof n);
  vals[0].shape = shp(3, DIMS(-1, 8, 16));
  vals[1].shape = shp(1, DIMS(16));
  vals[7].shape = shp(3, DIMS(-1, 8, 16));
  in[0] = S(2, 1), in[1] = R;
  q = ask(WH_OP_ADD, 2, in, want, &n, 2);
  EXPECT(same(q.out, S(2, 1)) && same(want[1], S(0, 1)), "broadcast add slices the vector");
  /* [B, 8, 16] split on 8 plus [16]: the vector broadcasts along the split: whole */
  in[0] = S(1, 1);
  q = ask(WH_OP_ADD, 2, in, want, &n, 2);
  EXPECT(same(q.out, S(1, 1)) && same(want[1], R), "a vector broadcast along the split stays whole");
  in[0] = P, in[1] = P;
  vals[1].shape = vals[0].shape;
  q = ask(WH_OP_ADD, 2, in, want, &n, 2);
  EXPECT(same(q.out, P), "partial + partial is partial");
  q = ask(WH_OP_MUL, 2, in, want, &n, 2);
  EXPECT(same(q.out, R) && same(want[0], R) && same(want[1], R), "partial * partial is summed first");

  /* attention over qkv split in 3 groups: 4 heads over 2 ranks */
  memset(&n, 0, sizeof n);
  vals[0].shape = shp(3, DIMS(-1, 8, 48));
  vals[7].shape = shp(3, DIMS(-1, 8, 16));
  n.n_ia = 1, n.ia[0] = 4;
  in[0] = S(2, 3);
  q = ask(WH_OP_ATTENTION, 1, in, want, &n, 2);
  EXPECT(same(q.out, S(2, 1)) && n.ia[0] == 2, "attention by heads");
  n.ia[0] = 4;
  q = ask(WH_OP_ATTENTION, 1, in, want, &n, 8);
  EXPECT(same(q.out, R) && same(want[0], R) && n.ia[0] == 4, "4 heads do not split 8 ways: whole");
  in[0] = S(2, 1);
  q = ask(WH_OP_ATTENTION, 1, in, want, &n, 2);
  EXPECT(same(q.out, R), "qkv split without groups (not per head): whole");

  /* softmax over a split last axis: whole; over another: split */
  memset(&n, 0, sizeof n);
  vals[0].shape = shp(2, DIMS(6, 16));
  vals[7].shape = vals[0].shape;
  in[0] = S(1, 1);
  q = ask(WH_OP_SOFTMAX, 1, in, want, &n, 2);
  EXPECT(same(q.out, R) && same(want[0], R), "softmax over the split axis gathers");
  in[0] = S(0, 1);
  q = ask(WH_OP_SOFTMAX, 1, in, want, &n, 2);
  EXPECT(same(q.out, S(0, 1)), "softmax along another axis stays split");

  /* sum over the split axis: partial; mean: whole */
  memset(&n, 0, sizeof n);
  vals[7].shape = shp(1, DIMS(16));
  n.n_ia = 2, n.ia[0] = 1, n.ia[1] = 0;
  in[0] = S(0, 1);
  q = ask(WH_OP_SUM, 1, in, want, &n, 2);
  EXPECT(same(q.out, P), "sum over the split axis gives partial sums");
  q = ask(WH_OP_MEAN, 1, in, want, &n, 2);
  EXPECT(same(q.out, R) && same(want[0], R), "mean over the split axis runs whole");
  in[0] = S(1, 1);
  vals[7].shape = shp(1, DIMS(6));
  n.ia[0] = 1;
  vals[7].shape = shp(1, DIMS(6));
  n.ia[0] = 2; /* sum over axis 1, keep axis 0 */
  q = ask(WH_OP_SUM, 1, in, want, &n, 2);
  EXPECT(same(q.out, P), "sum over axis 1 split: partial");
  in[0] = S(0, 1);
  q = ask(WH_OP_SUM, 1, in, want, &n, 2);
  EXPECT(same(q.out, S(0, 1)), "sum over another axis keeps the split");
}

static wh_ctx *ctx;

static wh_value lin(wh_graph *g, wh_value x, const char *nm, int in, int out) {
  char w[32], b[32];
  snprintf(w, sizeof w, "%s.w", nm);
  snprintf(b, sizeof b, "%s.b", nm);
  return wh_bias_add(g, wh_matmul(g, x, wh_param(g, w, WH_F32, 2, DIMS(out, in), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 1)), 0, 1),
                     wh_param(g, b, WH_F32, 1, DIMS(out), WH_INIT(WH_INIT_ZEROS, 0, 0, 0)), -1);
}

static wh__layout lay_of(const wh_graph *g, const wh__layout *lay, const char *name) {
  for (int i = 0; i < wh_graph_num_params(g); i++) {
    wh_value p = wh_graph_param(g, i);
    if (!strcmp(wh_value_name(g, p), name)) return lay[p];
  }
  return (wh__layout){-1, 0, 0};
}

/* One pre-norm transformer block with tied embeddings: Megatron's layout falls out. */
static void partition_gpt(int tp, int heads) {
  wh_graph *g;
  wh_graph_create(ctx, &g);
  const int T = 8, C = 32, V = 64;
  wh_value tok = wh_input(g, "tok", WH_I32, 2, DIMS(WH_BATCH, T)), tgt = wh_input(g, "tgt", WH_I32, 2, DIMS(WH_BATCH, T));
  wh_value wte = wh_param(g, "wte", WH_F32, 2, DIMS(V, C), WH_INIT(WH_INIT_NORMAL, 0, 0.2f, 1));
  wh_value x = wh_embedding(g, wte, tok);
  wh_value h = wh_layernorm(g, x, wh_param(g, "ln.g", WH_F32, 1, DIMS(C), WH_INIT(WH_INIT_ONES, 0, 0, 0)),
                            wh_param(g, "ln.b", WH_F32, 1, DIMS(C), WH_INIT(WH_INIT_ZEROS, 0, 0, 0)), 1e-5f);
  x = wh_add(g, x, lin(g, wh_attention(g, lin(g, h, "qkv", C, 3 * C), heads), "proj", C, C));
  x = wh_add(g, x, lin(g, wh_gelu(g, lin(g, x, "fc", C, 4 * C)), "fcp", 4 * C, C));
  wh_value loss = wh_cross_entropy(g, wh_matmul(g, x, wte, 0, 1), tgt);
  wh_backward(g, loss);
  wh_adamw_options o = WH_ADAMW_OPTIONS_INIT;
  o.clip_norm = 1.0f;
  wh_optimizer_adamw(g, &o);
  EXPECT(wh_graph_status(g) == WH_OK, "graph: %s", wh_last_error(ctx));
  wh__program p;
  wh__layout *lay = NULL;
  int counts[3];
  char msg[256] = "";
  EXPECT(wh__program_build(g, 0, &p) == WH_OK, "program");
  int nn = p.n_nodes;
  EXPECT(wh__program_shard(g, &p, tp, 1, &lay, counts, msg, sizeof msg) == WH_OK, "shard: %s", msg);
  int attn = heads % tp == 0;
  EXPECT(same(lay_of(g, lay, "qkv.w"), attn ? S(0, 3) : R) && same(lay_of(g, lay, "qkv.b"), attn ? S(0, 3) : R) &&
             same(lay_of(g, lay, "proj.w"), attn ? S(1, 1) : R) && same(lay_of(g, lay, "proj.b"), R),
         "tp %d, %d heads: attention split by heads (qkv columns in 3 groups, proj rows)", tp, heads);
  EXPECT(same(lay_of(g, lay, "fc.w"), S(0, 1)) && same(lay_of(g, lay, "fc.b"), S(0, 1)) &&
             same(lay_of(g, lay, "fcp.w"), S(1, 1)) && same(lay_of(g, lay, "fcp.b"), R),
         "tp %d: MLP column then row", tp);
  EXPECT(same(lay_of(g, lay, "wte"), S(0, 1)) && same(lay_of(g, lay, "ln.g"), R),
         "tp %d: the tied embedding split by vocabulary rows, layernorm whole", tp);
  /* one all-reduce forward and one backward per pair, and for the vocabulary-parallel embedding
   * (forward) and output layer (backward); nothing gathered; the embedding's whole gradient is
   * sliced where it meets the output layer's split one */
  int pairs = 1 + attn;
  EXPECT(counts[0] == 2 * pairs + 2 && counts[1] == 0 && counts[2] == 1, "tp %d: %d all-reduce, %d all-gather, %d slice",
         tp, counts[0], counts[1], counts[2]);
  int ce = 0, emb = 0;
  for (int i = 0; i < p.n_nodes; i++) {
    ce += p.nodes[i].op == WH_OP_TP_CROSS_ENTROPY || p.nodes[i].op == WH_OP_TP_CROSS_ENTROPY_GRAD;
    emb += p.nodes[i].op == WH_OP_TP_EMBEDDING && p.nodes[i].ia[0] == 64 / tp && p.nodes[i].ia[1] == 64;
  }
  EXPECT(ce == 2 && emb == 1, "tp %d: the sharded cross-entropy (%d) and embedding of rows [%d, %d) (%d)", tp, ce, 64 / tp,
         2 * 64 / tp, emb);
  EXPECT(p.n_nodes == nn + counts[0] + counts[1] + counts[2], "every inserted node counted");
  /* local shapes: the fc weight holds 4C/tp rows; the optimizer state follows */
  int ok = 0, tpclip = 0;
  for (int i = 0; i < p.n_nodes; i++) {
    const wh__node *n = &p.nodes[i];
    if (n->op == WH_OP_TP_NORM_CLIP) tpclip = 1;
    if (n->op == WH_OP_ADAMW_UPDATE && !strcmp(wh_value_name(g, n->in[0]), "fc.w"))
      ok = p.values[n->in[0]].shape.d[0] == 4 * C / tp && p.values[n->in[2]].shape.d[0] == 4 * C / tp &&
           p.values[n->in[1]].shape.d[0] == 4 * C / tp;
    if (n->op == WH_OP_ATTENTION && attn) ok &= n->ia[0] == heads / tp;
  }
  EXPECT(ok && tpclip, "tp %d: local shapes of fc.w, its gradient and state; clipping over shards", tp);
  free(lay);
  wh__program_free(&p);
  /* an internal op cannot be built into a graph */
  EXPECT(wh__op_find("tp_allreduce") == WH_OP_TP_ALLREDUCE && wh__ops[WH_OP_TP_ALLREDUCE]->shape(g, &(wh__node){.op = WH_OP_TP_ALLREDUCE}, NULL) != WH_OK &&
             strstr(wh_last_error(ctx), "partitioner"),
         "the partitioner's ops are refused in graphs: %s", wh_last_error(ctx));
  wh_graph_destroy(g);
}

typedef struct {
  int tp, heads;
} split;

static void partition(const void *arg) {
  const split *a = arg;
  partition_gpt(a->tp, a->heads);
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  return wh_ctx_create(&ctx, &o) != WH_OK;
}

static void teardown(void) { wh_ctx_destroy(ctx); }

static const split splits[] = {{2, 4}, {4, 4}, {4, 2}};
static const wt_case cases[] = {
    {"rules", rules, NULL},
    {"gpt_tp2_heads4", partition, &splits[0]},
    {"gpt_tp4_heads4", partition, &splits[1]},
    {"gpt_tp4_heads2", partition, &splits[2]},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"shard", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
