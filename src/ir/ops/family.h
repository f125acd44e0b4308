/* family.h - what the op family files (ir/ops/<family>.c) share: the row macros that tie a row to
 * its line in ops.def, and the helpers their shape functions, gradients, costs and sharding rules use. */
#ifndef WH_IR_OPS_FAMILY_H
#define WH_IR_OPS_FAMILY_H

#include "../ir.h"

/* ---- rows */

/* Each op's row, defined by WH__ROW in its family's file; ops.c makes the registry of them. */
#define WH_OP(id, name, kind, family, kernel, backends) extern const wh__op_def wh__row_##name;
#include "../ops.def"

/* What ops.def says of each op, for the row macros to check: its kind, and (as the name of a
 * constant) the family file its row belongs to. */
enum wh__op_facts {
#define WH_OP(id, name, kind, family, kernel, backends) \
  WH__KIND_##name = WH_OPK_##kind, WH__ROW_IN_##family##_##name = 1,
#include "../ops.def"
};

#define WH__ROW_IN_(family, name) WH__ROW_IN_##family##_##name
#define WH__ROW_IN(family, name) WH__ROW_IN_(family, name)

/* The row of op `op`, its fields given as designated initializers (.min_in = 1, ...); those not
 * given are 0 / NULL: no gradient (not differentiable), no inputs overwritten in place, no sharding
 * rule (replicated only). A family file defines WH__FAMILY (its name) before its rows: a row in
 * another family's file, or of an op ops.def lacks, fails to compile with "WH__ROW_IN_<family>_<op>
 * undeclared". The name and kind come from ops.def. */
#define WH__ROW(op, ...)                                                                   \
  _Static_assert(WH__ROW_IN(WH__FAMILY, op) && (int)WH__KIND_##op != (int)WH_OPK_PROGRAM,   \
                 #op " is a PROGRAM op in ops.def: its row is a WH__PROGRAM_ROW");          \
  const wh__op_def wh__row_##op = {.name = #op, .kind = (wh__op_kind)WH__KIND_##op, __VA_ARGS__}

/* The row of a program-only op (kind PROGRAM): the partitioner makes its nodes with their values
 * inside a rank's program, so its shape function only refuses it in a graph. */
#define WH__PROGRAM_ROW(op, ...)                                                           \
  _Static_assert(WH__ROW_IN(WH__FAMILY, op) && (int)WH__KIND_##op == (int)WH_OPK_PROGRAM, \
                 #op " is not a PROGRAM op in ops.def: its row is a WH__ROW");            \
  const wh__op_def wh__row_##op = {.name = #op, .kind = WH_OPK_PROGRAM, .shape = wh__sh_program_only, __VA_ARGS__}

/* ---- shape functions (ops.c) */
/* Backward-only ops are normally built by gradient builders, but a graph file can hold any node:
 * their shape functions check attributes and inputs as strictly as the forward ones. */

#define IN(i) (&g->values[n->in[i]])
#define OPN (wh__ops[n->op]->name)
#define SHAPE_OF(v) (&g->values[(v)].shape)

/* Fail the graph with WH_ERR_SHAPE: "op: why: input i shape .., input j shape .." (j < 0: one input). */
wh_status wh__fail_shape(wh_graph *g, const wh__node *n, const char *why, int i, int j);
wh_status wh__need_dtype(wh_graph *g, const wh__node *n, int i, wh_dtype dt);
/* Every input f32. */
wh_status wh__need_f32(wh_graph *g, const wh__node *n);
wh_status wh__need_attrs(wh_graph *g, const wh__node *n, int min_ia, int max_ia);
/* A shape stored in attributes: ndim dims from ia[first], each > 0 or symbolic, at most one symbolic. */
wh_status wh__attr_shape(wh_graph *g, const wh__node *n, int first, int ndim, wh__shape *out);
wh_status wh__need_shape(wh_graph *g, const wh__node *n, int i, const wh__shape *want, const char *what);

/* f32 inputs, the output like input 0. */
wh_status wh__sh_same(wh_graph *g, const wh__node *n, wh__value *o);
/* (saved, dy) gradients: the output like dy, saved must match dy. */
wh_status wh__sh_pair(wh_graph *g, const wh__node *n, wh__value *o);
/* Refuses a program-only op in a graph. */
wh_status wh__sh_program_only(wh_graph *g, const wh__node *n, wh__value *o);

/* ---- gradient builders (ops.c): they add nodes in the current (backward) phase */

wh_value wh__mk_node(wh_graph *g, int op, int n_in, const int32_t *in, const int64_t *ia, int n_ia, const double *fa,
                     int n_fa);
wh_value wh__mk_node2(wh_graph *g, int op, wh_value a, wh_value b);
wh_value wh__mk_reshape(wh_graph *g, wh_value x, const wh__shape *s);

/* ---- costs (ops.c) */

/* Bytes of every input read and of the output written. */
void wh__io_bytes(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c);
/* The elementwise estimate: the row's flops per element times the largest of the output's and
 * the inputs' element counts (per output element, or per input element for reductions and
 * updates), with wh__io_bytes. */
void wh__co_elems(const wh_graph *g, const wh__node *n, int64_t batch, wh__cost *c);

/* ---- sharding rules (shard.c holds the layout model and the rules several families share) */

#define SH(k) (&q->values[n->in[(k)]].shape)
#define OUTSH (&q->values[n->out].shape)
#define LAY_R ((wh__layout){WH_LAY_R, 0, 1}) /* replicated */
#define LAY_P ((wh__layout){WH_LAY_P, 0, 1}) /* partial sums */

static inline wh__layout lay_s(int dim, int groups) { return (wh__layout){WH_LAY_S, (int8_t)dim, (int8_t)groups}; }
static inline int is_s(wh__layout l) { return l.kind == WH_LAY_S; }
static inline int is_p(wh__layout l) { return l.kind == WH_LAY_P; }

/* Ops along the last axis (softmax and layernorm families). */
void wh__sr_lastaxis(wh__shard_q *q, wh__node *n);

#endif
