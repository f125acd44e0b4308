/* test_errors.c - bad input gets a status and a message naming what was wrong, poisons the
 * graph where it should, and never kills the host. Public API only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "whale.h"
#include "../common/runner.h"

static wh_ctx *ctx;

static int has(const char *msg, const char *part) { return msg && strstr(msg, part) != NULL; }

static void test_shape_errors(const void *arg) {
  (void)arg;
  wh_graph *g;
  wh_graph_create(ctx, &g);
  wh_value x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, 63});
  wh_value w = wh_param(g, "w", WH_F32, 2, (int64_t[]){64, 10}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
  wh_value y = wh_matmul(g, x, w, 0, 0);
  const char *m = wh_graph_error(g);
  EXPECT(y == WH_NONE, "matmul of mismatched shapes returned a value");
  EXPECT(wh_graph_status(g) == WH_ERR_SHAPE, "status %d", wh_graph_status(g));
  EXPECT(has(m, "matmul") && has(m, "input 0") && has(m, "input 1") && has(m, "[B,63]") && has(m, "[64,10]"),
         "message lacks op/indices/shapes: %s", m);
  EXPECT(has(wh_last_error(ctx), "matmul"), "context error not set: %s", wh_last_error(ctx));
  /* poisoned: later builders return WH_NONE, the first message stays */
  char first[512];
  snprintf(first, sizeof first, "%s", m);
  wh_value r = wh_relu(g, x);
  EXPECT(r == WH_NONE, "builder on a poisoned graph returned a value");
  wh_value z = wh_add(g, x, x);
  EXPECT(z == WH_NONE, "add on a poisoned graph returned a value");
  EXPECT(strcmp(wh_graph_error(g), first) == 0, "first message replaced: %s", wh_graph_error(g));
  EXPECT(wh_backward(g, y) == WH_ERR_POISONED, "backward on poisoned graph");
  EXPECT(wh_scope_stage(g) == WH_ERR_POISONED, "scope on poisoned graph");
  wh_session *s = NULL;
  EXPECT(wh_session_create(ctx, g, NULL, &s) == WH_ERR_POISONED && s == NULL, "session on poisoned graph");
  EXPECT(has(wh_last_error(ctx), first), "session error lacks the first message: %s", wh_last_error(ctx));
  EXPECT(wh_graph_save(g, "/tmp/never-written.whg") != WH_OK, "saving a poisoned graph");
  wh_graph_destroy(g);
}

static void test_dtype_and_args(const void *arg) {
  (void)arg;
  struct {
    const char *what;
    int expect;
    const char *part;
  } cases[] = {
      {"dtype", WH_ERR_DTYPE, "input 1 has dtype i32"},
      {"bad axis", WH_ERR_INVALID_ARGUMENT, "axis 5"},
      {"reshape count", WH_ERR_SHAPE, "element count"},
      {"bias size", WH_ERR_SHAPE, "bias_add"},
      {"conv channels", WH_ERR_SHAPE, "channel counts differ"},
      {"ce labels", WH_ERR_SHAPE, "labels"},
      {"two batch dims", WH_ERR_SHAPE, "symbolic"},
      {"dropout p", WH_ERR_INVALID_ARGUMENT, "p must be in [0, 1)"},
      {"slice range", WH_ERR_SHAPE, "range [3, 2)"},
      {"unknown dtype", WH_ERR_DTYPE, "unknown dtype"},
      {"bf16 not computable", WH_ERR_UNSUPPORTED, "bf16"},
      {"duplicate name", WH_ERR_INVALID_ARGUMENT, "already used"},
      {"WH_NONE input", WH_ERR_INVALID_ARGUMENT, "WH_NONE"},
      {"foreign value", WH_ERR_INVALID_ARGUMENT, "not a value of this graph"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    wh_graph *g;
    wh_graph_create(ctx, &g);
    wh_value a = wh_input(g, "a", WH_F32, 2, (int64_t[]){4, 6});
    wh_value l = wh_input(g, "l", WH_I32, 1, (int64_t[]){4});
    wh_value r = WH_NONE;
    switch (i) {
      case 0: r = wh_add(g, a, l); break;
      case 1: r = wh_sum(g, a, 1, (int[]){5}, 0); break;
      case 2: r = wh_reshape(g, a, 2, (int64_t[]){5, 5}); break;
      case 3: r = wh_bias_add(g, a, wh_param(g, "b", WH_F32, 1, (int64_t[]){4}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0)), -1); break;
      case 4: {
        wh_value x = wh_input(g, "img", WH_F32, 4, (int64_t[]){WH_BATCH, 3, 8, 8});
        wh_value k = wh_param(g, "k", WH_F32, 4, (int64_t[]){4, 2, 3, 3}, WH_INIT(WH_INIT_ZEROS, 0, 0, 0));
        r = wh_conv2d(g, x, k, 1, 1);
        break;
      }
      case 5: r = wh_cross_entropy(g, a, wh_input(g, "l2", WH_I32, 1, (int64_t[]){5})); break;
      case 6: r = wh_input(g, "bb", WH_F32, 2, (int64_t[]){WH_BATCH, WH_BATCH}); break;
      case 7: r = wh_dropout(g, a, 1.5f, 1); break;
      case 8: r = wh_slice(g, a, 1, 3, 2); break;
      case 9: r = wh_input(g, "q", (wh_dtype)42, 1, (int64_t[]){3}); break;
      case 10: r = wh_input(g, "q", WH_BF16, 1, (int64_t[]){3}); break;
      case 11: r = wh_input(g, "a", WH_F32, 1, (int64_t[]){3}); break;
      case 12: r = wh_relu(g, WH_NONE); break;
      case 13: r = wh_relu(g, 1000); break;
    }
    EXPECT(r == WH_NONE, "%s: returned a value", cases[i].what);
    EXPECT((int)wh_graph_status(g) == cases[i].expect, "%s: status %d (%s), expected %d: %s", cases[i].what,
           wh_graph_status(g), wh_status_str(wh_graph_status(g)), cases[i].expect, wh_graph_error(g));
    EXPECT(has(wh_graph_error(g), cases[i].part), "%s: message '%s' lacks '%s'", cases[i].what, wh_graph_error(g),
           cases[i].part);
    wh_graph_destroy(g);
  }
  /* NULL handles are refused, never dereferenced */
  EXPECT(wh_graph_create(NULL, NULL) == WH_ERR_INVALID_ARGUMENT, "graph_create NULL");
  EXPECT(wh_relu(NULL, 0) == WH_NONE, "relu NULL graph");
  EXPECT(wh_backward(NULL, 0) == WH_ERR_INVALID_ARGUMENT, "backward NULL");
  EXPECT(wh_session_run(NULL, WH_RUN_EVAL) == WH_ERR_INVALID_ARGUMENT, "run NULL");
  wh_graph_destroy(NULL);
  wh_session_destroy(NULL);
  wh_ctx_destroy(NULL);
  wh_ctx_options bad = WH_CTX_OPTIONS_INIT;
  bad.num_threads = -3;
  wh_ctx *c2 = NULL;
  EXPECT(wh_ctx_create(&c2, &bad) == WH_ERR_INVALID_ARGUMENT && c2 == NULL, "ctx with -3 threads");
}

static void test_session_errors(const void *arg) {
  (void)arg;
  wh_graph *g;
  wh_graph_create(ctx, &g);
  wh_value x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, 4});
  wh_value lab = wh_input(g, "labels", WH_I32, 1, (int64_t[]){WH_BATCH});
  wh_value w = wh_param(g, "w", WH_F32, 2, (int64_t[]){3, 4}, WH_INIT(WH_INIT_NORMAL, 0, 1, 7));
  wh_value h = wh_matmul(g, x, w, 0, 1);
  wh_value hidden = wh_relu(g, h);
  wh_value loss = wh_cross_entropy(g, hidden, lab);
  EXPECT(wh_backward(g, loss) == WH_OK, "backward: %s", wh_last_error(ctx));
  EXPECT(wh_backward(g, loss) == WH_ERR_STATE, "second backward accepted");
  wh_session *s;
  wh_session_options so = WH_SESSION_OPTIONS_INIT;
  so.batch = 2;
  /* options built against another header are refused by name */
  so.struct_size = sizeof so + 8;
  EXPECT(wh_session_create(ctx, g, &so, &s) == WH_ERR_INVALID_ARGUMENT && s == NULL &&
             has(wh_last_error(ctx), "wh_session_create: options struct_size"),
         "session options of another size: %s", wh_last_error(ctx));
  so.struct_size = sizeof so;
  /* devices: an unknown kind or precision is refused; CUDA without a GPU says why */
  so.device = (wh_device_kind)9;
  EXPECT(wh_session_create(ctx, g, &so, &s) == WH_ERR_INVALID_ARGUMENT && s == NULL &&
             has(wh_last_error(ctx), "unknown device kind 9"),
         "device kind 9: %s", wh_last_error(ctx));
  so.device = WH_DEVICE_CUDA;
  so.precision = (wh_precision)5;
  EXPECT(wh_session_create(ctx, g, &so, &s) == WH_ERR_INVALID_ARGUMENT && s == NULL &&
             has(wh_last_error(ctx), "unknown precision 5"),
         "precision 5: %s", wh_last_error(ctx));
  so.precision = WH_PRECISION_BF16;
  if (wh_cuda_device_count() == 0)
    EXPECT(wh_session_create(ctx, g, &so, &s) == WH_ERR_UNSUPPORTED && s == NULL && has(wh_last_error(ctx), "CUDA"),
           "CUDA session without a GPU: %s", wh_last_error(ctx));
  so.device = WH_DEVICE_CPU;
  EXPECT(wh_session_create(ctx, g, &so, &s) == WH_OK, "session: %s", wh_last_error(ctx));
  /* frozen while the session lives */
  EXPECT(wh_relu(g, x) == WH_NONE && wh_graph_status(g) == WH_OK && has(wh_last_error(ctx), "frozen"),
         "building on a frozen graph: %s", wh_last_error(ctx));
  EXPECT(wh_session_step(s) == WH_ERR_STATE && has(wh_last_error(ctx), "optimizer"), "train without optimizer: %s",
         wh_last_error(ctx));
  EXPECT(wh_session_run(s, WH_RUN_GRAD) == WH_ERR_STATE && has(wh_last_error(ctx), "'x' is not fed"),
         "missing feed: %s", wh_last_error(ctx));
  float xb[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  EXPECT(wh_session_feed(s, x, xb, 12) == WH_ERR_SHAPE && has(wh_last_error(ctx), "'x'") && has(wh_last_error(ctx), "32 bytes"),
         "short feed: %s", wh_last_error(ctx));
  EXPECT(wh_session_feed(s, w, xb, 48) == WH_ERR_INVALID_ARGUMENT, "feeding a parameter");
  int32_t lb[2] = {1, 3};
  EXPECT(wh_session_feed(s, x, xb, sizeof xb) == WH_OK, "feed x");
  EXPECT(wh_session_feed(s, lab, lb, sizeof lb) == WH_OK, "feed labels");
  float out[6];
  EXPECT(wh_session_fetch(s, loss, out, 4) == WH_ERR_STATE, "fetch before any run");
  EXPECT(wh_session_run(s, WH_RUN_GRAD) != WH_OK && has(wh_last_error(ctx), "cross_entropy") &&
             has(wh_last_error(ctx), "label 3 at row 1"),
         "label out of range: %s", wh_last_error(ctx));
  lb[1] = 2;
  EXPECT(wh_session_run(s, WH_RUN_GRAD) == WH_OK, "run: %s", wh_last_error(ctx));
  EXPECT(wh_session_fetch(s, loss, out, 4) == WH_OK, "fetch loss: %s", wh_last_error(ctx));
  EXPECT(wh_session_fetch(s, wh_grad(g, w), out, sizeof(float) * 2) == WH_ERR_SHAPE, "fetch grad with short buffer");
  float gw[12];
  EXPECT(wh_session_fetch(s, wh_grad(g, w), gw, sizeof gw) == WH_OK, "fetch grad: %s", wh_last_error(ctx));
  EXPECT(wh_session_fetch(s, hidden, out, sizeof(float) * 6) == WH_ERR_STATE && has(wh_last_error(ctx), "wh_graph_keep"),
         "fetch of an unkept intermediate: %s", wh_last_error(ctx));
  EXPECT(wh_session_run(s, (wh_run_mode)9) == WH_ERR_INVALID_ARGUMENT, "bad mode");
  EXPECT(wh_session_set_batch(s, 0) == WH_ERR_INVALID_ARGUMENT, "batch 0");
  EXPECT(wh_session_set_param(s, x, xb, 4) == WH_ERR_INVALID_ARGUMENT, "set_param on an input");
  /* rebinding the batch drops stale feeds */
  EXPECT(wh_session_set_batch(s, 3) == WH_OK, "set_batch 3");
  EXPECT(wh_session_run(s, WH_RUN_EVAL) == WH_ERR_STATE, "run after rebinding without feeds");
  wh_session_destroy(s);
  EXPECT(wh_relu(g, x) != WH_NONE, "graph thawed after the session: %s", wh_last_error(ctx));
  wh_graph_destroy(g);

  wh_graph *g2 = NULL;
  EXPECT(wh_graph_load(ctx, "/nonexistent/dir/model.whg", &g2) == WH_ERR_IO && g2 == NULL &&
             has(wh_last_error(ctx), "/nonexistent/dir/model.whg"),
         "missing file: %s", wh_last_error(ctx));
}

static void test_hints(const void *arg) {
  (void)arg;
  wh_graph *g;
  wh_graph_create(ctx, &g);
  wh_value x = wh_input(g, "x", WH_F32, 2, (int64_t[]){WH_BATCH, 4});
  EXPECT(wh_scope_replicate(g, 4) == WH_OK, "replicate");
  EXPECT(wh_scope_stage(g) == WH_OK, "stage 0");
  wh_value a = wh_relu(g, x);
  EXPECT(wh_scope_stage(g) == WH_ERR_STATE, "nested stage accepted");
  EXPECT(wh_scope_end(g) == WH_OK, "end stage 0");
  EXPECT(wh_scope_stage(g) == WH_OK, "stage 1");
  EXPECT(wh_scope_split(g, 2) == WH_OK, "split");
  wh_value b = wh_tanh(g, a);
  wh_scope_end(g);
  wh_scope_end(g);
  wh_scope_end(g);
  EXPECT(wh_scope_end(g) == WH_ERR_STATE, "end with no scope open");
  EXPECT(wh_scope_split(g, 0) == WH_ERR_INVALID_ARGUMENT, "split 0");
  EXPECT(wh_set_pipeline(g, 0) == WH_ERR_INVALID_ARGUMENT, "pipeline 0");
  EXPECT(wh_set_pipeline(g, 8) == WH_OK && wh_graph_pipeline(g) == 8, "pipeline 8");
  wh_hint h[4];
  int n = wh_value_hints(g, a, h, 4);
  EXPECT(n == 2 && h[0].kind == WH_HINT_REPLICATE && h[0].n == 4 && h[1].kind == WH_HINT_STAGE && h[1].n == 0,
         "hints of a: n=%d", n);
  n = wh_value_hints(g, b, h, 4);
  EXPECT(n == 3 && h[1].kind == WH_HINT_STAGE && h[1].n == 1 && h[2].kind == WH_HINT_SPLIT && h[2].n == 2,
         "hints of b: n=%d", n);
  EXPECT(wh_value_hints(g, x, h, 4) == 0, "input outside scopes has hints");
  wh_graph_destroy(g);
}

static int logged;
static void log_fn(wh_log_level level, const char *msg, void *user) {
  (void)msg;
  if (level == WH_LOG_ERROR) (*(int *)user)++;
}

static void test_strings(const void *arg) {
  (void)arg;
  EXPECT(strcmp(wh_status_str(WH_ERR_SHAPE), "shape mismatch") == 0, "status string");
  EXPECT(strlen(wh_version()) >= 5 && has(wh_build_info(), "cpu("), "version %s, build %s", wh_version(), wh_build_info());
}

/* after the other cases: their errors reached the log callback */
static void test_logged(const void *arg) {
  (void)arg;
  if (!wt_running_all()) {
    wt_skip("counts what the other cases logged");
    return;
  }
  EXPECT(logged > 0, "errors were not logged through the callback");
}

static int setup(int argc, char **argv) {
  (void)argc, (void)argv;
  wh_ctx_options o = WH_CTX_OPTIONS_INIT;
  o.log_fn = log_fn;
  o.log_user = &logged;
  o.num_threads = 2;
  return wh_ctx_create(&ctx, &o) != WH_OK;
}

static void teardown(void) { wh_ctx_destroy(ctx); }

static const wt_case cases[] = {
    {"strings", test_strings, NULL},   {"shape_errors", test_shape_errors, NULL},
    {"dtype_and_args", test_dtype_and_args, NULL}, {"session_errors", test_session_errors, NULL},
    {"hints", test_hints, NULL},       {"logged", test_logged, NULL},
};

int main(int argc, char **argv) {
  const wt_suite suite = {"errors", setup, teardown, NULL, 0};
  return wt_main(&suite, cases, WT_COUNT(cases), argc, argv);
}
